from django.urls import path

app_name = "operations"
urlpatterns: list = []
