"""BatchRecommender: the top-k of every user (or of a list), by a Beam job."""
