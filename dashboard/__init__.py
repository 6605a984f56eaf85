"""What the dashboard pages share: cached loaders, figures, widgets, session state."""
