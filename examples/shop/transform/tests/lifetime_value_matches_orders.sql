-- Every cent booked on an order counts towards its customer: fails (returns a row) when the
-- customers' lifetime value and the orders' amounts do not add up to the same total.
select 1
from (select sum(lifetime_value_cents) as by_customer from {{ ref('dim_customers') }}) as c
cross join (select sum(amount_cents) as by_order from {{ ref('fct_orders') }}) as o
where c.by_customer <> o.by_order
