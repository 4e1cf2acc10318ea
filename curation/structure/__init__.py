"""Structure found in the embeddings: clusters, their names and pockets."""
