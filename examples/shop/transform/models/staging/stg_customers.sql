select
    cast(id as integer) as customer_id,
    first_name,
    last_name,
    email,
    country,
    cast(signed_up_at as date) as signed_up_at
from {{ source('raw', 'customers') }}
