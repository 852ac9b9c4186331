"""Finding images: folder watching, the settled-file check, vendor file names and paths as the OS gives them."""
