"""Every API route, mounted at `/api/` by `ouroboros.urls`."""
from django.urls import path

from curation.api import training_sets

urlpatterns = [
    path("training-sets/<int:pk>/", training_sets.TrainingSetDetail.as_view(), name="api-training-set"),
    path("training-sets/<int:pk>/download/<str:fmt>/", training_sets.TrainingSetDownload.as_view(),
         name="api-training-set-download"),
]
