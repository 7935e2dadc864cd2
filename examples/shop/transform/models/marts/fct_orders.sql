with payments as (
    select
        order_id,
        count(*) as payments,
        cast(sum(amount_cents) as bigint) as amount_cents
    from {{ ref('stg_payments') }}
    group by order_id
)

select
    o.order_id,
    o.customer_id,
    o.ordered_at,
    o.status,
    coalesce(p.payments, 0) as payments,
    coalesce(p.amount_cents, 0) as amount_cents,
    {{ cents_to_amount('coalesce(p.amount_cents, 0)') }} as amount
from {{ ref('stg_orders') }} as o
left join payments as p using (order_id)
