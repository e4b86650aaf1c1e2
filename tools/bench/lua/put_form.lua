-- put_form.lua - PUT of the URL given to wrk with the form body
-- value=hello-value, as etcd's v2 keys API takes it.
wrk.method = "PUT"
wrk.body = "value=hello-value"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
