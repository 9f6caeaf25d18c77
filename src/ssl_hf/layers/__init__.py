"""SSL building blocks shared by two or more methods."""
