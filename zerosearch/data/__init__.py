"""Question-answering data in the layout the trainer reads."""
