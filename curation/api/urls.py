"""Every API route, mounted at `/api/` by `ouroboros.urls`."""
from django.urls import path

from curation.api import imports, training_sets

urlpatterns = [
    path("training-sets/<int:pk>/", training_sets.TrainingSetDetail.as_view(), name="api-training-set"),
    path("training-sets/<int:pk>/download/<str:fmt>/", training_sets.TrainingSetDownload.as_view(),
         name="api-training-set-download"),
    # `str` converters: a malformed slug or id reaches the view and gets the API's JSON 404,
    # not Django's HTML page.
    path("lineages/<str:slug>/imports/", imports.LineageImportCreate.as_view(), name="api-lineage-imports"),
    path("imports/<str:pk>/", imports.ImportDetail.as_view(), name="api-import"),
]
