"""Entry points: the command line, the train job and what notebooks call. Only these set process state (logging, signal handlers)."""
