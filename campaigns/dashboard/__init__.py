"""The dashboard: pages built from aggregates (selectors), with htmx for live parts."""
