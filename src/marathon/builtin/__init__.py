"""Built-in behaviour registered through the plugin hooks (see issue: plugins)."""
