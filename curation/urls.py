from django.urls import path

from curation import views

urlpatterns = [
    path("review/", views.review, name="review"),
    path("review/<int:pk>/decide/", views.review_decide, name="review-decide"),
    path("lineages/", views.lineage_list, name="lineage-list"),
    path("lineages/<slug:slug>/", views.lineage_detail, name="lineage-detail"),
    path("lineages/<slug:slug>/training-sets/", views.training_set_create, name="training-set-create"),
    path("training-sets/<int:pk>/download/", views.training_set_download, name="training-set-download"),
]
