"""Images in: folders and bundles decoded, de-duplicated, cached and split (dataset), images,
the default download, the HOG/PCA features, synthetic test images. Imports only allsearch.core."""
