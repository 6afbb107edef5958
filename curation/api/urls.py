"""Every API route, mounted at `/api/` by `ouroboros.urls`."""
from django.urls import path

from curation.api import imports, training_sets

urlpatterns = [
    path("training-sets/<int:pk>/", training_sets.TrainingSetDetail.as_view(), name="api-training-set"),
    path("training-sets/<int:pk>/download/<str:fmt>/", training_sets.TrainingSetDownload.as_view(),
         name="api-training-set-download"),
    path("lineages/<str:slug>/imports/", imports.LineageImportCreate.as_view(), name="api-lineage-imports"),
    path("imports/<int:pk>/", imports.ImportDetail.as_view(), name="api-import"),
]
