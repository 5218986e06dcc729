"""Worker pools and scaler events arrive with the scaler issue."""
