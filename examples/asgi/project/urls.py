from django.urls import path
from notes import views

urlpatterns = [path("count/<str:bridge>/", views.count)]
