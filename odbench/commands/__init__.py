"""CLI commands, one module per area; each imports its heavy dependencies lazily."""
