"""Integrations with data and distributed engines (``ray_data``: Ray Data). Each imports its engine lazily."""
