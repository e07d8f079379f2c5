from django.urls import include, path

# README step 3 (with a slash, so the endpoint is /cml/1c_exchange.php)
urlpatterns = [path("cml/", include("cml.urls"))]
