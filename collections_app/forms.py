"""Forms for the collection pages: they parse input; the services judge it."""

from django import forms
from django.conf import settings

from collections_app.services import MAX_CHUNK_SIZE, MIN_CHUNK_SIZE


class CollectionCreateForm(forms.Form):
    name = forms.CharField(max_length=200)
    description = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}), required=False
    )
    source = forms.CharField(
        label="Source folder",
        strip=False,
        help_text="An absolute path to a folder inside the document roots.",
    )
    # The range is the services' to judge; the attributes only guide browsers.
    chunk_size = forms.IntegerField(
        help_text=f"Characters per chunk, {MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE}.",
        widget=forms.NumberInput(attrs={"min": MIN_CHUNK_SIZE, "max": MAX_CHUNK_SIZE}),
    )
    chunk_overlap = forms.IntegerField(
        help_text="Characters shared by neighbouring chunks, less than half a chunk.",
        widget=forms.NumberInput(attrs={"min": 0}),
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Read at request time, so a changed setting needs no restart of forms.
        self.fields["chunk_size"].initial = settings.DEFAULT_CHUNK_SIZE
        self.fields["chunk_overlap"].initial = settings.DEFAULT_CHUNK_OVERLAP


class CollectionEditForm(forms.Form):
    name = forms.CharField(max_length=200)
    description = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}), required=False
    )


class SourceForm(forms.Form):
    source = forms.CharField(label="Folder", strip=False)
