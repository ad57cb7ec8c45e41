"""The `tessera` command line; works in-process against TESSERA_DATABASE_URL."""
