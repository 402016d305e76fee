"""Reading and writing data at the Spark edge: the session factory, Delta tables, training sets."""
