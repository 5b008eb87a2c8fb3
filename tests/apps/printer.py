"""print()s `printed TEXT` to stdout and writes `stderr TEXT` to
sys.stderr for /?t=TEXT (flushed), as apps that log to a stream do."""

import sys


def app(environ, start_response):
    text = environ.get("QUERY_STRING", "").partition("t=")[2]
    print("printed %s" % text, flush=True)
    sys.stderr.write("stderr %s\n" % text)
    sys.stderr.flush()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
