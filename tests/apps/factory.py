"""The ways of naming an app: a factory with literal arguments, --call, a
module alone (its `application` wins over `app`), a dotted attribute path."""


def _answer(text):
    body = text.encode()

    def wsgi(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    return wsgi


def create(name, n=1):
    return _answer("created %s %r" % (name, n))


def make():
    return _answer("made by --call")


class Holder:
    inner = staticmethod(_answer("nested attribute"))


holder = Holder()
application = _answer("application")
app = _answer("app")
NOT_CALLABLE = 42
