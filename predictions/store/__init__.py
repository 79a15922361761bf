"""Where prediction rows go: their shape, the local spool (always) and the database writers,
the reader and the replay of a spool, the migrations, and the live table's shape."""
