{#- Money is stored in integer cents (exact sums); marts also show it as a decimal amount.
    The outer cast keeps the type the same on every warehouse (DuckDB, PostgreSQL). -#}
{% macro cents_to_amount(column) -%}
    cast(cast({{ column }} as decimal(18, 2)) / 100 as decimal(18, 2))
{%- endmacro %}
