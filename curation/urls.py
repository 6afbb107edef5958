from django.urls import path

from curation import views

urlpatterns = [
    path("review/", views.review, name="review"),
    path("review/<int:pk>/decide/", views.review_decide, name="review-decide"),
    path("review/<int:pk>/skip/", views.review_skip, name="review-skip"),
    path("review/undo/", views.review_undo, name="review-undo"),
    path("review/bulk/", views.review_bulk, name="review-bulk"),
    path("lineages/", views.lineage_list, name="lineage-list"),
    path("lineages/<slug:slug>/", views.lineage_detail, name="lineage-detail"),
    path("lineages/<slug:slug>/training-sets/", views.training_set_create, name="training-set-create"),
    path("training-sets/<int:pk>/download/", views.training_set_download, name="training-set-download"),
]
