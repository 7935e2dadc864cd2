{#- Money is stored in integer cents (exact sums); marts also show it as a decimal amount. -#}
{% macro cents_to_amount(column) -%}
    cast({{ column }} as decimal(18, 2)) / 100
{%- endmacro %}
