"""The server's HTTP routes, one module per route family, each added to the app by its ``add_routes``."""
