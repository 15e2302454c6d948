from django.urls import path
from notes import views

urlpatterns = [
    path("count/<str:bridge>/", views.count),
    path("session/sync/", views.session),
    path("session/async/", views.asession),
]
