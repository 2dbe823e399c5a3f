"""The page and the token endpoint."""

from django.urls import path

from gateway import views

urlpatterns = [
    path("", views.index, name="index"),
    path("token", views.token, name="token"),
]
