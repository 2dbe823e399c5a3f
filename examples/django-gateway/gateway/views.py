"""The demo page and the endpoint that gives it tokens."""

import re

from django.conf import settings
from django.http import JsonResponse
from django.shortcuts import render

from .tokens import issue_token

USER_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def index(request):
    """The page: it imports the JavaScript client from channels-server."""
    return render(request, "gateway/index.html", {"gateway_url": settings.GATEWAY_URL})


def token(request):
    """A token for the user. The demo has no login: it takes `?user=NAME`.
    In your project, use `request.user` (and `@login_required`) instead."""
    user = request.GET.get("user", "")
    if not USER_NAME.match(user):
        return JsonResponse({"error": "user: 1 to 64 letters, digits, '_', '.' or '-'"}, status=400)
    return JsonResponse({"token": issue_token(user), "url": settings.GATEWAY_URL})
