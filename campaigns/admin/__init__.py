from . import campaigns, datasets  # noqa: F401  (registers the ModelAdmins)
