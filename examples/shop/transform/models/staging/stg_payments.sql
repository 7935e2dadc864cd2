select
    cast(id as integer) as payment_id,
    cast(order_id as integer) as order_id,
    method,
    cast(amount_cents as bigint) as amount_cents,
    cast(paid_at as date) as paid_at
from {{ source('raw', 'payments') }}
