"""Lifecycle hooks: each appends its name to $ZIBAI_TEST_TMP/hooks.log.
No app here on purpose (used to check `module has neither ...`)."""

import os


def _log(what):
    with open(os.path.join(os.environ["ZIBAI_TEST_TMP"], "hooks.log"), "a") as f:
        f.write(what + "\n")


def before_serve():
    _log("before_serve")


def before_graceful_exit():
    _log("before_graceful_exit")


def before_died():
    _log("before_died")
