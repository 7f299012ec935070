"""URLs of the operation pages, under /operations/."""

from django.urls import path

from operations import views

app_name = "operations"
urlpatterns = [
    path("", views.operation_list, name="list"),
    path("<uuid:operation_id>/", views.operation_detail, name="detail"),
    path("<uuid:operation_id>/cancel/", views.operation_cancel, name="cancel"),
    path("<uuid:operation_id>/dismiss/", views.operation_dismiss, name="dismiss"),
]
