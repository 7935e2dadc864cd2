with orders as (
    select
        customer_id,
        min(ordered_at) as first_ordered_at,
        max(ordered_at) as last_ordered_at,
        count(*) as orders,
        cast(sum(amount_cents) as bigint) as lifetime_value_cents
    from {{ ref('fct_orders') }}
    group by customer_id
)

select
    c.customer_id,
    c.first_name,
    c.last_name,
    c.country,
    c.signed_up_at,
    o.first_ordered_at,
    o.last_ordered_at,
    coalesce(o.orders, 0) as orders,
    coalesce(o.lifetime_value_cents, 0) as lifetime_value_cents,
    {{ cents_to_amount('coalesce(o.lifetime_value_cents, 0)') }} as lifetime_value
from {{ ref('stg_customers') }} as c
left join orders as o using (customer_id)
