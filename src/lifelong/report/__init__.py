"""Reports: terminal tables (and, later, the HTML report and run comparison)."""
