"""flask scenario: Flask's smallest app, one route answering 13 bytes."""

from flask import Flask

flask_app = Flask(__name__)


@flask_app.route("/")
def hello():
    return "Hello, world!", 200, {"Content-Type": "text/plain"}


app = flask_app
