"""URLs of the audit pages, under /audit/."""

from django.urls import path

from audit import views

app_name = "audit"
urlpatterns = [
    path("", views.entry_list, name="list"),
    path(
        "collection/<uuid:collection_id>/", views.collection_entries, name="collection"
    ),
]
