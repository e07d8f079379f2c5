"""A sandbox 1C:Enterprise that exchanges with a site the way 1C's standard exchange does.

`OneCClient` runs the exact request sequence of 1C's "exchange with a site" node against any
CommerceML 2 exchange endpoint (syncd's own, or a shop's)::

    catalog (when the accountant changed goods or prices):
      GET  ?type=catalog&mode=checkauth            Basic auth -> success / cookie name / value / sessid= / timestamp=
      GET  ?type=catalog&mode=init&sessid=…&version=2.08
      POST ?type=catalog&mode=file&filename=…      in file_limit chunks; one zip when the site offers zip=yes
      GET  ?type=catalog&mode=import&filename=import.xml   repeated while the answer is `progress`
      GET  ?type=catalog&mode=import&filename=offers.xml   idem
      GET  ?type=catalog&mode=complete
    sale (every cycle):
      GET  ?type=sale&mode=checkauth, init(version=…)
      GET  ?type=sale&mode=query                    the site's orders XML -> the "1C database"
      GET  ?type=sale&mode=success
      POST ?type=sale&mode=file&filename=…          1C's own order changes, chunked / zipped
      GET  ?type=sale&mode=import&filename=…        repeated while `progress`

1C's quirks are kept: the cookie is sent from the checkauth answer lines (not from Set-Cookie), `sessid`
on every later call, status lines decoded as windows-1251, files written with a BOM and
`ВерсияСхемы` of the negotiated version, documents 1C makes get GUIDs as `Ид`, and upload file names
carry a Linux temp-dir prefix (`/tmp/<guid>/…`), which the site strips.

Older 1C configurations and third-party exchange processors are mimicked by knobs of
`OneCClient`: `send_version=False` (no `version` at init: the old sale protocol, where the site
imports the posted file at `mode=file` and 1C never calls `mode=import`), `send_sessid=False`,
`auth_encoding="cp1251"` (Basic auth in the Windows code page), `use_zip=False`,
`send_complete=False` (a catalog exchange without `mode=complete`), `post_query=True` (`mode=query`
posted as a form). Uploads are always cut in the site's `file_limit` chunks, zipped or not.

The "1C database" (`OneCClient.db`) keeps what reached 1C; the accountant's actions (`pay`, `ship`,
`sign_documents`, `set_status`, `post`, `edit_requisites`, `new_counterparty`, `set_product`) are
uploaded by the next `run_cycle()`.
"""

from syncd.sandbox.onec.client import OneCClient, OneCDatabase, OneCExchangeError

__all__ = ["OneCClient", "OneCDatabase", "OneCExchangeError"]
