"""The filters of the audit pages: they parse the query string into a queryset."""

from django import forms
from django.db.models import QuerySet

from audit.models import AuditLog


class AuditFilterForm(forms.Form):
    action = forms.ChoiceField(
        choices=[("", "Any action"), *AuditLog.Action.choices], required=False
    )
    user = forms.CharField(
        max_length=150, required=False, help_text="User name, or system"
    )
    collection = forms.CharField(
        max_length=200, required=False, help_text="Part of the name"
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
            entries = entries.filter(collection_name__icontains=data["collection"])
        if data.get("date_from"):
            entries = entries.filter(created_at__date__gte=data["date_from"])
        if data.get("date_to"):
            entries = entries.filter(created_at__date__lte=data["date_to"])
        return entries
