"""django scenario: a single-file Django project (settings configured in code,
no middleware, one URL route) answering 13 bytes.

The view sets Content-Length itself, as CommonMiddleware would in a default
project: without it the response has no length, and servers without chunked
encoding (uwsgi's --http-socket) end it by closing the connection."""

from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="zibai-bench-not-secret",
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["*"],
    MIDDLEWARE=[],
    INSTALLED_APPS=[],
    USE_TZ=True,
)

from django.core.wsgi import get_wsgi_application  # noqa: E402  (after configure)
from django.http import HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402


def hello(request):
    response = HttpResponse(b"Hello, world!", content_type="text/plain")
    response["Content-Length"] = "13"
    return response


urlpatterns = [path("", hello)]

app = get_wsgi_application()
