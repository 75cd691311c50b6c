"""MovieLensExampleGen: MovieLens ratings -> sequence and rating tf.Examples, on Beam."""
