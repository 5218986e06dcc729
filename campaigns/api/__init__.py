"""The REST API (Django REST framework): thin views onto the services and selectors."""
