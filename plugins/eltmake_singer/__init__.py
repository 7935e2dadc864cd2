"""Singer extract-load steps for eltmake (in progress)."""
