"""The filters of the audit pages: they parse the query string into a queryset."""

from django import forms
from django.db.models import QuerySet

from audit.models import AuditLog
from collections_app.models import Collection


class AuditFilterForm(forms.Form):
    action = forms.ChoiceField(
        choices=[("", "Any action"), *AuditLog.Action.choices], required=False
    )
    user = forms.CharField(
        max_length=150, required=False, help_text="User name, or system"
    )
    collection = forms.CharField(
        max_length=200, required=False, help_text="Name or id, or part of a name"
    )
    date_from = forms.DateField(
        label="From", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    date_to = forms.DateField(
        label="To", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )

    def __init__(self, *args, with_collection: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not with_collection:
            del self.fields["collection"]

    def filter(self, entries: QuerySet) -> QuerySet:
        """The entries that match every valid filter; invalid ones are ignored."""
        self.is_valid()
        data = getattr(self, "cleaned_data", {})
        if data.get("action"):
            entries = entries.filter(action=data["action"])
        if data.get("user"):
            entries = entries.filter(actor_name__iexact=data["user"].strip())
        if data.get("collection"):
            entries = about_collection(entries, data["collection"])
        if data.get("date_from"):
            entries = entries.filter(created_at__date__gte=data["date_from"])
        if data.get("date_to"):
            entries = entries.filter(created_at__date__lte=data["date_to"])
        return entries


def about_collection(entries: QuerySet, text: str) -> QuerySet:
    """The whole history of the collection with this id, or of every live
    collection with this name; other text matches the names entries were
    written with, as for a deleted collection."""
    by_id = entries.for_collection_named_by_id(text)
    if by_id is not None:
        return by_id
    live = Collection.objects.filter(name__iexact=text).values("id")
    if live.exists():
        return entries.filter(collection_uuid__in=live)
    return entries.filter(collection_name__icontains=text)
