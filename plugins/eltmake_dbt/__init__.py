"""dbt transformation steps for eltmake (in progress)."""
