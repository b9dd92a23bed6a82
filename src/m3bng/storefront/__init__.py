"""Storefront reads: BNG's B2B storefront asking M3 for prices, stock, orders and invoices
(service.py), through a read-through cache (cache.py)."""
