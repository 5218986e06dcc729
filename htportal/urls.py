from django.contrib import admin
from django.http import JsonResponse
from django.urls import include, path
from django.views import defaults
from django.views.generic import RedirectView

urlpatterns = [
    path("", RedirectView.as_view(url="/dashboard/", permanent=False)),
    # django-rq registers its pages in the admin (/admin/django_rq/dashboard/); they read every
    # queue as JSON (htportal/nopickle.py).
    path("admin/", admin.site.urls),
    path("api/", include("campaigns.api.urls")),
    path("dashboard/", include("campaigns.dashboard.urls")),
]


# A path under /api/ that no route matches, or an error outside DRF's handling, is answered in
# the API's shape too: {"error": "..."} (docs/api.md).
def handler404(request, exception):
    if request.path.startswith("/api/"):
        return JsonResponse({"error": f"no API endpoint at {request.path} (see /api/docs/)"},
                            status=404)
    return defaults.page_not_found(request, exception)


def handler500(request):
    if request.path.startswith("/api/"):
        return JsonResponse({"error": "internal error: the request failed on the server, not "
                                      "because of what it sent; it has been logged"}, status=500)
    return defaults.server_error(request)
