"""URLs of the collection pages, under /collections/."""

from django.urls import path

from collections_app import views

app_name = "collections"
urlpatterns = [
    path("", views.collection_list, name="list"),
    path("new/", views.collection_create, name="create"),
    path("search/", views.search, name="search"),
    path("<uuid:collection_id>/", views.collection_detail, name="detail"),
    path("<uuid:collection_id>/edit/", views.collection_update, name="update"),
    path("<uuid:collection_id>/sources/add/", views.source_add, name="add_source"),
    path(
        "<uuid:collection_id>/sources/remove/",
        views.source_remove,
        name="remove_source",
    ),
    path("<uuid:collection_id>/reindex/", views.collection_reindex, name="reindex"),
    path("<uuid:collection_id>/delete/", views.collection_delete, name="delete"),
]
