"""What a run, a sweep or the demo shows: tables, plots, HTML pages."""
