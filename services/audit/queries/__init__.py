"""Read-only queries over the allocator's database, one module per question. Each takes
a connection and returns the answer's model; the API and the command line share them."""
